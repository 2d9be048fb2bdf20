"""How the program receives its configuration under the real CLI: the Python language host
passes the stack's config as JSON in PULUMI_CONFIG and the secret keys in
PULUMI_CONFIG_SECRET_KEYS (the mock runtime sets the same values in-process instead)."""

from __future__ import annotations

import json

import pytest
from pulumi.runtime import config as runtime_config

from components.config import engine_config
from serving.config.settings import PROJECT, load_settings


def test_the_language_hosts_environment_reaches_the_one_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime_config.set_all_config({}, [])
    values = {
        "aws:region": "us-east-1",
        f"{PROJECT}:hfAccessToken": "<ciphertext decrypted by the CLI>",
        f"{PROJECT}:clusterApiPublicCidrs": '["203.0.113.0/24"]',
        f"{PROJECT}:replicas": "2",
    }
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(values))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps([f"{PROJECT}:hfAccessToken"]))
    config, secret_keys = engine_config()
    assert config == values
    assert secret_keys == {f"{PROJECT}:hfAccessToken"}
    settings = load_settings(config, secret_keys)
    assert settings.serving.replicas == 2
    assert settings.cluster.api_public_access_cidrs == ("203.0.113.0/24",)
