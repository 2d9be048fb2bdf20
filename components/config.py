"""The stack's configuration as this Pulumi program receives it, handed to the one loader.

`read_stack()` takes every key the engine passed (the CLI's stack config with Pulumi.yaml's
defaults applied, or the offline runner's), validates it with `serving.config.settings` before a
single resource is registered, and reads the secret keys only as Pulumi secrets.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi.runtime import config as runtime_config

from serving.config.settings import PROJECT, StackSettings, load_settings


@dataclass(frozen=True)
class StackSecrets:
    """Secret configuration, kept as Pulumi secret outputs from the moment it is read."""

    hf_access_token: pulumi.Output[str]
    kubeconfig: pulumi.Output[str] | None


def engine_config() -> tuple[dict[str, object], set[str]]:
    """All configuration the engine passed to the program, and which keys are secret."""
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret_keys |= {key for key in values if runtime_config.is_config_secret(key)}
    return values, secret_keys


def read_stack() -> tuple[StackSettings, StackSecrets]:
    """Validated settings and the secrets (raises SettingsError before any resource exists)."""
    values, secret_keys = engine_config()
    settings = load_settings(values, secret_keys)
    config = pulumi.Config(PROJECT)
    kubeconfig = config.get_secret("kubeconfig") if settings.existing_cluster else None
    return settings, StackSecrets(
        hf_access_token=config.require_secret("hfAccessToken"), kubeconfig=kubeconfig
    )
