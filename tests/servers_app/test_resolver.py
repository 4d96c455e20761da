"""Resolving a LoRA as people write it to the name a server matches in `<lora:NAME:w>`,
over the rows of `/sdapi/v1/loras` listings (no server, no database)."""

import pytest

from servers_app.model_cache import ModelRow, lora_rows
from servers_app.resolver import lora_key, resolve_lora


def listing(separator: str) -> list[ModelRow]:
    """A server's LoRAs as /sdapi/v1/loras lists them: name = file stem, alias =
    ss_output_name (or the name), path = the absolute file."""
    root = "C:\\sd\\models\\Lora" if separator == "\\" else "/opt/sd/models/Lora"

    def entry(relative: str, alias: str | None = None) -> dict[str, object]:
        path = separator.join([root, *relative.split("/")])
        name = relative.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return {"name": name, "alias": alias or name, "path": path, "metadata": {}}

    return lora_rows(
        [
            entry("add_detail.safetensors"),
            entry("styles/ink_style.safetensors", alias="Ink Style XL"),
            entry("styles/Smooth Pony.safetensors"),
            entry("characters/Smooth Pony.safetensors"),  # same stem, other folder
            entry("styles/xl_more_art-full_v1.safetensors", alias="xl_more_art-full"),
        ]
    )


@pytest.mark.parametrize("separator", ["/", "\\"], ids=["linux", "windows"])
@pytest.mark.parametrize(
    ("requested", "name", "rule"),
    [
        ("add_detail", "add_detail", "name"),
        ("add_detail.safetensors", "add_detail", "path"),
        ("ADD_DETAIL.safetensors", "add_detail", "path"),
        ("./add_detail.safetensors", "add_detail", "path"),
        ("styles/ink_style.safetensors", "ink_style", "path"),
        ("styles\\ink_style.safetensors", "ink_style", "path"),
        ("styles\\ink_style", "ink_style", "path"),
        ("styles/ink_style", "ink_style", "path"),
        ("Styles/Smooth Pony.safetensors", "Smooth Pony", "path"),
        ("characters\\Smooth Pony", "Smooth Pony", "path"),
        ("ink_style.safetensors", "ink_style", "file_name"),
        ("INK_STYLE", "ink_style", "file_name"),
        ("Ink Style XL", "ink_style", "alias"),
        ("ink style xl", "ink_style", "alias"),
        ("xl_more_art-full", "xl_more_art-full_v1", "alias"),
        ("/mnt/gpu-box/models/Lora/styles/ink_style.safetensors", "ink_style", "absolute_path"),
    ],
)
def test_each_accepted_form_resolves_to_the_servers_name(separator, requested, name, rule):
    resolution = resolve_lora(f"  {requested} ", listing(separator))

    assert resolution.model is not None, requested
    assert resolution.model.name == name
    assert resolution.rule == rule


def test_the_servers_own_absolute_path_resolves():
    models = listing("\\")

    resolution = resolve_lora("C:\\sd\\models\\Lora\\styles\\ink_style.safetensors", models)

    assert resolution.rule == "absolute_path"
    assert resolution.model.name == "ink_style"


@pytest.mark.parametrize("requested", ["Smooth Pony", "Smooth Pony.safetensors", "smooth pony"])
def test_a_name_two_folders_have_is_an_error_naming_both(requested):
    resolution = resolve_lora(requested, listing("\\"))

    assert resolution.model is None
    assert resolution.error == "ambiguous"
    assert resolution.candidates == [
        "characters\\Smooth Pony.safetensors",
        "styles\\Smooth Pony.safetensors",
    ]
    message = resolution.message("Desktop")
    assert message.startswith("LoRA '")
    assert "matches several models on server 'Desktop'" in message
    assert "styles\\Smooth Pony.safetensors" in message


def test_an_unknown_lora_suggests_close_names():
    resolution = resolve_lora("add_details.safetensors", listing("/"))

    assert resolution.model is None
    assert resolution.error == "not_found"
    assert resolution.candidates == ["add_detail"]
    assert resolution.message("Laptop") == (
        "LoRA 'add_details.safetensors' was not found on server 'Laptop'. Did you mean: add_detail?"
    )


def test_a_close_alias_suggests_the_name_to_send():
    resolution = resolve_lora("Ink Style X", listing("/"))

    assert resolution.candidates == ["ink_style"]


@pytest.mark.parametrize("requested", ["", "   ", "other_folder/add_detail", "nothing_like_it"])
def test_what_no_lora_is_is_not_found(requested):
    resolution = resolve_lora(requested, listing("/"))

    assert (resolution.model, resolution.error) == (None, "not_found")


def test_a_path_in_another_folder_does_not_match_by_its_file_name():
    resolution = resolve_lora("characters/ink_style.safetensors", listing("/"))

    assert resolution.error == "not_found"


@pytest.mark.parametrize(
    ("requested", "key"),
    [
        ("add_detail", "add_detail"),
        ("Add_Detail.safetensors", "add_detail"),
        ("styles\\Ink_Style", "ink_style"),
        ("styles/ink_style.safetensors", "ink_style"),
        ("Ink Style XL", "ink style xl"),
    ],
)
def test_lora_key_is_the_case_folded_file_stem(requested, key):
    assert lora_key(requested) == key
