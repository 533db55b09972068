"""A minimal Gatan DigitalMicrograph (DM3/DM4) writer, for test fixtures only.

No maintained library writes DM files, so the tests make their own: a root
tag group with ImageList holding one image (data, dimensions, data type,
spatial calibrations, instrument tags), in the byte layout that DM3 and DM4
readers (RosettaSciIO here) parse: big-endian tag structure, little-endian
data, DM4 with 8-byte lengths and tag sizes.
"""

import struct

import numpy as np

# DM tag data types and image data types.
_SCALAR = {np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("uint16"): 4,
           np.dtype("uint32"): 5, np.dtype("float32"): 6, np.dtype("float64"): 7}
_IMAGE_TYPE = {np.dtype("int16"): 1, np.dtype("float32"): 2, np.dtype("uint8"): 6,
               np.dtype("int32"): 7, np.dtype("uint16"): 10, np.dtype("uint32"): 11,
               np.dtype("float64"): 12}


class _Writer:
    def __init__(self, version):
        self.v = version
        self.q = ">q" if version == 4 else ">l"  # length fields

    def n(self, value):
        return struct.pack(self.q, value)

    def data_tag(self, name, info, payload):
        body = b"%%%%" + self.n(len(info)) + b"".join(self.n(i) for i in info) + payload
        size = struct.pack(">q", len(body)) if self.v == 4 else b""
        return b"\x15" + struct.pack(">h", len(name)) + name.encode() + size + body

    def scalar(self, name, value, dtype):
        dtype = np.dtype(dtype)
        return self.data_tag(name, [_SCALAR[dtype]], np.asarray(value, dtype.newbyteorder("<")).tobytes())

    def string(self, name, text):
        arr = np.frombuffer(text.encode("utf-16-le"), dtype="<u2")
        return self.data_tag(name, [20, 4, arr.size], arr.tobytes())

    def array(self, name, arr):
        arr = np.ascontiguousarray(arr)
        return self.data_tag(name, [20, _SCALAR[arr.dtype], arr.size],
                             arr.astype(arr.dtype.newbyteorder("<")).tobytes())

    def group(self, name, tags, root=False):
        body = b"\x00\x01"
        if self.v == 4 and not root:
            body += struct.pack(">q", 0)  # read as the group size and ignored
        body += self.n(len(tags)) + b"".join(tags)
        if root:
            return body
        return b"\x14" + struct.pack(">h", len(name)) + name.encode() + body


def write_dm(path, image, *, pixel_size, unit="nm", version=3, voltage_v=200000.0,
             microscope="Test STEM"):
    """Write a 2-D ``image`` (uint16/float32/...) as DM3 (version=3) or DM4."""
    image = np.asarray(image)
    w = _Writer(version)
    rows, cols = image.shape
    flat = image.ravel()
    data_arr_type = {np.dtype("uint16"): 4, np.dtype("float32"): 6, np.dtype("int16"): 2,
                     np.dtype("int32"): 3, np.dtype("uint32"): 5, np.dtype("float64"): 7}[image.dtype]
    data_tag = w.data_tag("Data", [20, data_arr_type, flat.size],
                          flat.astype(image.dtype.newbyteorder("<")).tobytes())
    dims = w.group("Dimensions", [w.scalar("", cols, "uint32"), w.scalar("", rows, "uint32")])
    cal_dim = w.group("Dimension", [
        w.group("", [w.scalar("Origin", 0.0, "float32"), w.scalar("Scale", pixel_size, "float32"),
                     w.string("Units", unit)]),
        w.group("", [w.scalar("Origin", 0.0, "float32"), w.scalar("Scale", pixel_size, "float32"),
                     w.string("Units", unit)]),
    ])
    brightness = w.group("Brightness", [w.scalar("Origin", 0.0, "float32"),
                                        w.scalar("Scale", 1.0, "float32"), w.string("Units", "counts")])
    calibrations = w.group("Calibrations", [brightness, cal_dim])
    image_data = w.group("ImageData", [
        calibrations, data_tag, w.scalar("DataType", _IMAGE_TYPE[image.dtype], "int32"),
        dims, w.scalar("PixelDepth", image.dtype.itemsize, "int32"),
    ])
    mic = w.group("Microscope Info", [w.scalar("Voltage", voltage_v, "float64"),
                                      w.string("Name", microscope)])
    image_tags = w.group("ImageTags", [mic])
    entry = w.group("", [image_data, image_tags, w.string("Name", "HAADF")])
    image_list = w.group("ImageList", [entry])
    root = w.group("", [image_list], root=True)
    header = struct.pack(">l", version) + w.n(len(root) + 16) + struct.pack(">l", 1)
    with open(path, "wb") as fh:
        fh.write(header + root + b"\x00" * 8)
