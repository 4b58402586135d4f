"""Publisher API keys: hashed storage, lookup, source permissions, the key command."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from ioc.cli import main
from ioc.config import load_settings
from ioc.config._gateway import PublisherSettings
from ioc.errors import AuthError, ConfigError
from ioc.gateway import KeyRing, hash_key, new_key


def test_keys_are_random_and_only_hashes_are_stored():
    a, b = new_key(), new_key()
    assert a != b and a.startswith("iock_") and len(a) > 40
    ring = KeyRing({"p": PublisherSettings(key_sha256=hash_key(a), sources=["x", "y"])})
    caller = ring.authenticate(a)
    assert caller.publisher == "p" and caller.may_publish("x") and not caller.may_publish("z")
    assert caller.default_source is None
    for bad in (None, "", b, a + "x"):
        with pytest.raises(AuthError) as ei:
            ring.authenticate(bad)
        assert a not in str(ei.value)


def test_wildcard_and_single_source():
    k = new_key()
    ring = KeyRing({"p": PublisherSettings(key_sha256=hash_key(k), sources=["*"]),
                    "q": PublisherSettings(key_sha256=hash_key(k[::-1]), sources=["only"])})
    assert ring.authenticate(k).may_publish("anything")
    assert ring.authenticate(k[::-1]).default_source == "only"


def test_key_command_prints_a_working_settings_entry(tmp_path):
    r = CliRunner().invoke(main, ["gateway", "key", "--publisher", "tc",
                                  "--sources", "loops, cams"])
    assert r.exit_code == 0, r.output
    key = r.output.splitlines()[1].strip()
    cfg = yaml.safe_load(r.output.split("Add to your settings file:\n", 1)[1])
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(cfg))
    s = load_settings(f, env={})
    assert key not in f.read_text()
    caller = KeyRing(s.gateway.publishers).authenticate(key)
    assert caller.publisher == "tc" and caller.sources == {"loops", "cams"}


def test_bad_publisher_entries_are_config_errors():
    with pytest.raises(ConfigError) as ei:
        load_settings(env={}, overrides={"gateway": {"publishers": {
            "p": {"key_sha256": "plaintext-key", "sources": []}}}})
    paths = " ".join(p for p, _ in ei.value.problems)
    assert "gateway.publishers.p.key_sha256" in paths and "gateway.publishers.p.sources" in paths
