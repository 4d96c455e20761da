"""Whether the checkpoint a server reports it used is the one MobileSD sent."""

from servers_app.checkpoints import checkpoint_hashes, checkpoint_key, checkpoint_ran_as

TITLE = "Pony\\cyberrealisticPony_v8.safetensors [0123456789]"


def test_known_hashes_are_the_titles_and_the_given_ones_lowercase_without_blanks():
    assert checkpoint_hashes(TITLE, "0123456789", "", "ABCDEF" + "0" * 58) == (
        "0123456789",
        "abcdef" + "0" * 58,
    )


def test_the_same_short_hash_is_the_same_checkpoint():
    assert checkpoint_ran_as(
        title=TITLE, hashes=("0123456789",), reported_hash="0123456789", reported_name="other"
    )


def test_a_short_hash_prefix_of_the_sha256_is_the_same_checkpoint():
    assert checkpoint_ran_as(
        title="x.safetensors",
        hashes=("abcdef0123" + "4" * 54,),
        reported_hash="ABCDEF0123",
        reported_name=None,
    )


def test_another_hash_is_another_checkpoint_even_with_the_same_name():
    assert (
        checkpoint_ran_as(
            title=TITLE,
            hashes=("0123456789",),
            reported_hash="9999999999",
            reported_name="cyberrealisticPony_v8",
        )
        is False
    )


def test_without_hashes_the_file_stem_decides_in_any_case():
    assert checkpoint_ran_as(
        title="Pony/cyberrealisticPony_v8.safetensors",
        hashes=(),
        reported_hash="0123456789",
        reported_name="CyberrealisticPony_V8",
    )
    assert (
        checkpoint_ran_as(
            title="Pony/cyberrealisticPony_v8.safetensors",
            hashes=(),
            reported_hash=None,
            reported_name="sd_xl_base_1.0",
        )
        is False
    )


def test_an_info_without_hash_or_name_says_nothing():
    assert (
        checkpoint_ran_as(title=TITLE, hashes=("0123456789",), reported_hash=None, reported_name="")
        is None
    )


def test_a_leading_dot_folder_is_the_models_folder_itself():
    # The original MobileSD names a top-level model `./<file name>` (relativePath ".").
    assert checkpoint_key("./sd_xl_base_1.0.safetensors") == "sd_xl_base_1.0.safetensors"
    assert checkpoint_key(".\\Pony\\x.safetensors") == "pony/x.safetensors"
    assert checkpoint_key("sub.dir/x.safetensors") == "sub.dir/x.safetensors"
