"""The configuration file: defaults, the template, typed errors, and the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.config import TEMPLATE, Config, ConfigError, Policy, load_config
from tests.builders import key


def test_no_file_and_the_commented_template_both_mean_defaults(tmp_path: Path) -> None:
    assert load_config(None) == Config()
    assert load_config(tmp_path / "missing.toml") == Config()
    path = tmp_path / "config.toml"
    path.write_text(TEMPLATE)
    assert load_config(path) == Config()
    # Every setting the template mentions exists, uncommented, with its default.
    uncommented = "\n".join(
        line.replace("# ", "", 1) if line.startswith("# ") and " = " in line else line
        for line in TEMPLATE.splitlines()
        if "publish_for" not in line and "12D3KooW" not in line
    )
    path.write_text(uncommented)
    assert load_config(path) == Config()


def test_settings_and_policy(tmp_path: Path) -> None:
    pub, prov, bad = key(0).peer_id(), key(1).peer_id(), key(2).peer_id()
    path = tmp_path / "c.toml"
    path.write_text(
        f'[server]\nfind_addr = "127.0.0.1:4000"\n[ingest]\npoll_interval = 5\n'
        f'[policy]\ndeny_publishers = ["{bad}"]\n'
        f'[policy.publish_for]\n"{pub.to_cid()}" = ["{prov}"]\n'
    )
    config = load_config(path)
    assert config.find_addr == "127.0.0.1:4000" and config.poll_interval == 5.0
    policy = config.policy
    assert policy.publisher_allowed(pub) and not policy.publisher_allowed(bad)
    assert policy.may_publish(pub, prov) and policy.may_publish(prov, prov)
    assert not policy.may_publish(prov, pub)
    assert not Policy(deny_providers=(str(prov),)).may_publish(prov, prov)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nfind = 1\n", "unknown setting"),
        ("[nope]\n", "unknown section"),
        ('[ingest]\nsegment = "big"\n', "ingest.segment must be a int"),
        ('[policy]\nallow_publishers = ["not-a-peer"]\n', "policy.allow_publishers"),
        ('[policy.publish_for]\n"x" = []\n', "publish_for"),
        ("this is not toml", "cannot read"),
    ],
)
def test_bad_files_are_typed_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
