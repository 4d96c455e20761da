"""File names cannot leave their folder: user names are refused, Civitai's are sanitized."""

import os
from pathlib import Path

import pytest

from civitai_app.names import (
    InvalidFileName,
    check_user_file_name,
    path_inside,
    sanitize_remote_name,
    stem_of,
)


@pytest.mark.parametrize(
    "name",
    [
        "../evil.safetensors",
        "..",
        "../../etc/passwd",
        "/etc/passwd",
        "/abs/model.safetensors",
        "C:\\Windows\\model.safetensors",
        "C:model.safetensors",
        "..\\evil.safetensors",
        "sub\\dir.safetensors",
        "sub/dir.safetensors",
        "\\\\server\\share\\x.safetensors",
        "nul\x00byte.safetensors",
        "CON.safetensors",
        "con",
        "lpt1.safetensors",
        "COM3",
        "what?.safetensors",
        'quote".safetensors',
        "pipe|.safetensors",
        "trailing.",
        ".hidden.safetensors",
        "tab\tin.safetensors",
        "evil\u202egnp.safetensors",
        "ltr\u200emark.safetensors",
        "rtl\u200fmark.safetensors",
        "isolate\u2067x.safetensors",
        "embed\u202ax.safetensors",
        "c1\x85control.safetensors",
        "del\x7f.safetensors",
        "",
        "   ",
        "x" * 300,
    ],
)
def test_user_names_that_could_escape_or_misbehave_are_refused(name):
    with pytest.raises(InvalidFileName):
        check_user_file_name(name, extension=".safetensors")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("myModel", "myModel.safetensors"),
        ("myModel.safetensors", "myModel.safetensors"),
        ("myModel.SAFETENSORS", "myModel.SAFETENSORS"),
        ("juggernaut v9.5", "juggernaut v9.5.safetensors"),
        ("model.ckpt", "model.ckpt.safetensors"),  # the real extension is kept
        ("café ネコ", "café ネコ.safetensors"),
        ("  spaced  ", "spaced.safetensors"),
    ],
)
def test_user_names_keep_the_files_extension(name, expected):
    assert check_user_file_name(name, extension=".safetensors") == expected


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("../../escape.safetensors", "escape.safetensors"),
        ("/etc/cron.d/x.safetensors", "x.safetensors"),
        ("..\\..\\win.safetensors", "win.safetensors"),
        ("C:\\models\\x.safetensors", "x.safetensors"),
        ("CON.safetensors", "_CON.safetensors"),
        ("a<b>c:d|e?.safetensors", "a_b_c_d_e_.safetensors"),
        ("nul\x00in.safetensors", "nulin.safetensors"),
        (".hidden.safetensors", "hidden.safetensors"),
        ("..", "civitai-1.safetensors"),
        ("", "civitai-1.safetensors"),
        ("noext", "noext.safetensors"),
        ("evil\u202egnp.safetensors", "evil_gnp.safetensors"),
        ("a\u2066b\u2069\x9b.safetensors", "a_b__.safetensors"),
    ],
)
def test_civitai_names_are_sanitized(remote, expected):
    assert sanitize_remote_name(remote, fallback="civitai-1", extension=".safetensors") == expected


def test_over_long_remote_names_keep_their_extension():
    name = sanitize_remote_name("é" * 300 + ".safetensors", fallback="x")

    assert name.endswith(".safetensors")
    assert len(name.encode()) <= 200


def test_path_inside_refuses_anything_outside_the_folder(tmp_path: Path):
    folder = tmp_path / "Lora"
    folder.mkdir()
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    os.symlink(outside, folder / "link.safetensors")

    assert path_inside(folder, "ok.safetensors") == folder.resolve() / "ok.safetensors"
    for bad in ("../x.safetensors", "/abs.safetensors", "sub/x.safetensors", "link.safetensors"):
        with pytest.raises(InvalidFileName):
            path_inside(folder, bad)


def test_sidecars_are_named_after_the_stem():
    assert stem_of("juggernautXL_v9.safetensors") == "juggernautXL_v9"
    assert stem_of("sd_xl_base_1.0.safetensors") == "sd_xl_base_1.0"
