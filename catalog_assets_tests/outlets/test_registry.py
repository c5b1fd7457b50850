"""outlets.yaml validation, entry by entry, and reloading on change (pure + a real file)."""

import os

from catalog_assets.outlets.registry import RegistryLoader, parse_registry, token_digest

ENV = {"T_A": "token-a", "T_B": "token-b", "T_C": "token-c"}
CATS = frozenset({"cat-1", "cat-2"})


def entry(outlet_id, token_env, **extra):
    return {"id": outlet_id, "name": outlet_id, "token_env": token_env, **extra}


def test_valid_entries_get_defaults_and_only_a_token_digest():
    registry = parse_registry(
        {"outlets": [entry("a", "T_A"), entry("b", "T_B", categories=["cat-1"])]}, ENV, CATS
    )
    assert registry.problems == {} and set(registry.outlets) == {"a", "b"}
    a = registry.outlets["a"]
    assert a.categories is None and a.silent_after_minutes == 15
    assert a.token_sha256 == token_digest("token-a") and "token-a" not in repr(a)
    assert registry.outlets["b"].categories == ("cat-1",)


def test_each_invalid_entry_is_reported_and_the_others_keep_working():
    registry = parse_registry(
        {
            "outlets": [
                entry("ok", "T_A"),
                entry("dup", "T_B"),
                entry("dup", "T_C"),
                entry("no-token", "T_MISSING"),
                entry("bad-cat", "T_C", categories=["cat-1", "nope"]),
                entry("bad-silence", "T_C", silent_after_minutes=-1),
                {"name": "no id"},
                "just a string",
            ]
        },
        ENV,
        CATS,
    )
    assert set(registry.outlets) == {"ok"}
    problems = registry.problems
    assert "appears 2 times" in problems["dup"]
    assert "token variable T_MISSING is not set" in problems["no-token"]
    assert "unknown categories ['nope']" in problems["bad-cat"]
    assert "silent_after_minutes" in problems["bad-silence"]
    assert "id must be" in problems["entry #7"] and "not a mapping" in problems["entry #8"]
    assert registry.known("no-token") and not registry.known("ghost")
    # bad-cat and bad-silence share T_C, but they are already refused for their own reasons
    assert "token-c" not in str(problems)


def test_two_outlets_with_one_token_are_both_refused():
    registry = parse_registry({"outlets": [entry("a", "T_A"), entry("b", "T_A")]}, ENV, CATS)
    assert registry.outlets == {}
    assert "shares its token with b" in registry.problems["a"]


def test_the_monitor_judges_entries_without_holding_tokens():
    registry = parse_registry(
        {"outlets": [entry("a", "T_MISSING")]}, {}, None, require_tokens=False
    )
    assert set(registry.outlets) == {"a"}


def test_the_loader_rereads_on_change_and_keeps_the_last_good_file(tmp_path):
    path = tmp_path / "outlets.yaml"
    path.write_text("outlets:\n  - {id: a, token_env: T_A}\n", encoding="utf-8")
    reloads = []
    loader = RegistryLoader(str(path), env=ENV, on_reload=reloads.append)
    assert set(loader.get().outlets) == {"a"}
    assert loader.get() is loader.get() and len(reloads) == 1  # unchanged file: no re-read
    path.write_text("outlets:\n  - {id: a, token_env: T_A}\n  - {id: b, token_env: T_B}\n")
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    assert set(loader.get().outlets) == {"a", "b"}
    path.write_text("outlets: [ {id: broken")
    os.utime(path, ns=(1, 3_000_000_000_000_000_000))
    broken = loader.get()
    assert set(broken.outlets) == {"a", "b"} and "not valid YAML" in broken.error
    assert "serving the last readable version" in broken.error
    # a new snapshot's categories re-judge the same file
    path.write_text("outlets:\n  - {id: a, token_env: T_A, categories: [cat-9]}\n")
    os.utime(path, ns=(1, 4_000_000_000_000_000_000))
    assert "unknown categories" in loader.get(("snap-1", CATS)).problems["a"]
    assert set(loader.get(("snap-2", frozenset({"cat-9"}))).outlets) == {"a"}


def test_a_token_shared_with_a_refused_entry_refuses_the_valid_one_too():
    registry = parse_registry(
        {"outlets": [entry("a", "T_A", silent_after_minutes=0), entry("b", "T_A")]}, ENV, CATS
    )
    assert registry.outlets == {}
    assert "silent_after_minutes" in registry.problems["a"]
    assert "shares its token with b" in registry.problems["a"]
    assert "shares its token with a" in registry.problems["b"]


def test_entries_are_judged_without_echoing_a_token_or_failing_on_odd_keys():
    """A token pasted as `token_env` must not reach logs and alerts through the problem text;
    YAML keys of mixed types (`on:` parses as a boolean) are reported, not a crash; a token
    mounted from a file with a trailing newline still matches."""
    pasted = "9f2c5e1a-token-pasted-by-mistake"
    registry = parse_registry(
        {
            "outlets": [
                entry("a", pasted),
                {**entry("b", "T_B"), True: 1, "colour": "red"},
                entry("c", "T_NL"),
            ]
        },
        {**ENV, "T_NL": "token-c\n"},
        CATS,
    )
    assert pasted not in str(registry.problems) and "rotate it" in registry.problems["a"]
    assert "unknown keys ['True', 'colour']" in registry.problems["b"]
    assert registry.outlets["c"].token_sha256 == token_digest("token-c")


def test_an_empty_file_keeps_the_last_readable_version(tmp_path):
    """A file caught empty mid-rewrite is not a chain with no outlets (`outlets: []` is)."""
    path = tmp_path / "outlets.yaml"
    path.write_text("outlets:\n  - {id: a, token_env: T_A}\n", encoding="utf-8")
    loader = RegistryLoader(str(path), env=ENV)
    assert set(loader.get().outlets) == {"a"}
    path.write_text("")
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    emptied = loader.get()
    assert set(emptied.outlets) == {"a"} and "is empty" in emptied.error
    path.write_text("outlets: []\n")
    os.utime(path, ns=(1, 3_000_000_000_000_000_000))
    assert loader.get().outlets == {} and loader.get().error is None


def test_a_root_category_1c_removed_is_served_with_a_warning_not_refused():
    registry = parse_registry(
        {
            "outlets": [
                entry("a", "T_A", categories=["cat-1", "gone"]),
                entry("b", "T_B", categories=["gone"], silent_after_minutes=0),
            ]
        },
        ENV,
        CATS,
        unplaced_categories={"gone": "removed", "lost": "orphan"},
    )
    assert set(registry.outlets) == {"a"} and "a" not in registry.problems
    assert "categories ['gone'] were removed in 1C" in registry.warnings["a"]
    assert "removed in 1C" in registry.problems["b"] and "b" not in registry.warnings
    flagged = parse_registry(
        {"outlets": [entry("c", "T_C", categories=["lost"])]},
        ENV,
        CATS,
        unplaced_categories={"gone": "removed", "lost": "orphan"},
    )
    assert set(flagged.outlets) == {"c"}
    assert "{'lost': 'orphan'} are flagged in category_tree" in flagged.warnings["c"]
