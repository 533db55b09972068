import os

from latticegenome.profiles import install_profiles


def make_profiles(tmp_path):
    prof = tmp_path / "repo" / "profiles"
    for name in ("local", "titan"):
        (prof / name).mkdir(parents=True)
        (prof / name / "config.yaml").write_text("cores: 1\n")
    return prof


def test_links_then_idempotent(tmp_path):
    prof = make_profiles(tmp_path)
    target = tmp_path / "cfg"
    lines = install_profiles(prof, target)
    assert all("linked" in ln for ln in lines)
    assert os.readlink(target / "titan") == str((prof / "titan").resolve())
    assert all("already linked" in ln for ln in install_profiles(prof, target))


def test_replaces_stale_links_and_keeps_users_own(tmp_path):
    prof = make_profiles(tmp_path)
    target = tmp_path / "cfg"
    target.mkdir()
    (target / "local").symlink_to(tmp_path / "old-clone" / "profiles" / "local")  # dangling
    (target / "titan").mkdir()  # the user's own profile
    lines = install_profiles(prof, target)
    assert os.readlink(target / "local") == str((prof / "local").resolve())
    assert (target / "titan").is_dir() and not (target / "titan").is_symlink()
    assert any("your own" in ln for ln in lines)
