"""atldas.utils.atomic: a failed write leaves the earlier file intact and no temporary behind."""

import pytest

from atldas.utils.atomic import atomic_path, write_text_atomic


def test_write_text_atomic_replaces_and_creates_folders(tmp_path):
    p = write_text_atomic(tmp_path / "a" / "b.json", "{}\n")
    assert p.read_text() == "{}\n"
    write_text_atomic(p, "[1]\n")
    assert p.read_text() == "[1]\n"
    assert sorted(x.name for x in p.parent.iterdir()) == ["b.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "ckpt.pt"
    p.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(p, suffix=".pt") as tmp:
            assert tmp.endswith(".pt") and tmp != str(p)
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["ckpt.pt"]
