"""The whole configuration (:class:`Settings`), loaded from YAML and the environment."""

from __future__ import annotations

import contextvars
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from bridge.config.base import evse_belongs_to
from bridge.config.hub import (
    DeliverySettings,
    EvseDataSettings,
    FullLoadSettings,
    HubSimSettings,
    OicpSettings,
)
from bridge.config.ocpp import ChargerSettings, OcppSettings, charger_mode
from bridge.config.service import (
    ApiSettings,
    CatalogSettings,
    LogSettings,
    OpsSettings,
    RuntimeSettings,
    StatusSettings,
)
from bridge.config.state import ReplicationSettings, StateSettings
from bridge.errors import ConfigError


class Settings(BaseSettings):
    """The whole bridge configuration."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    ocpp: OcppSettings = Field(default_factory=OcppSettings)
    oicp: OicpSettings = Field(default_factory=OicpSettings)
    fullload: FullLoadSettings = Field(default_factory=FullLoadSettings)
    evse_data: EvseDataSettings = Field(default_factory=EvseDataSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    replication: ReplicationSettings = Field(default_factory=ReplicationSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    hub_sim: HubSimSettings = Field(default_factory=HubSimSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    chargers: dict[str, ChargerSettings] = Field(
        default_factory=dict, description="Registry: charge point ID → its EVSEs."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Checks across sections; every problem is reported, not only the first."""
        _raise_all(
            [*self._registry_consistent(), *self._security_consistent(), *self._proxy_consistent()]
        )
        return self

    def _registry_consistent(self) -> list[str]:
        op = self.oicp.operator_id
        problems: list[str] = []
        seen: dict[str, str] = {}
        for cp_id, charger in self.chargers.items():
            for key, evse_id in charger.evses.items():
                if not evse_belongs_to(evse_id, op):
                    problems.append(
                        f"chargers.{cp_id}.evses.{key}: EvseID {evse_id!r} does not carry the "
                        f"operator prefix {op!r} (the hub would answer 018)"
                    )
                other = seen.setdefault(evse_id, cp_id)
                if other != cp_id:
                    problems.append(
                        f"chargers.{cp_id}.evses.{key}: EvseID {evse_id!r} is also used by "
                        f"charger {other!r}"
                    )
        if self.ocpp.allow_unlisted and not self.ocpp.evse_id_template:
            problems.append("ocpp.allow_unlisted needs ocpp.evse_id_template")
        return problems

    def _security_consistent(self) -> list[str]:
        sec = self.ocpp.security
        problems: list[str] = []
        if self.ocpp.allow_unlisted and sec.profile in (1, 2) and not self._checked_upstream(None):
            problems.append(
                f"ocpp.allow_unlisted: unlisted chargers have no password, so they cannot log in "
                f"with security profile {sec.profile}; use profile 3 or list them"
            )
        for cp_id, charger in self.chargers.items():
            profile = sec.profile if charger.security_profile is None else charger.security_profile
            where = f"chargers.{cp_id}.security_profile"
            if profile >= 2 and sec.tls_cert is None:
                problems.append(f"{where}: profile {profile} needs ocpp.security.tls_cert (wss)")
            if profile == 3 and sec.charger_ca is None:
                problems.append(f"{where}: profile 3 needs ocpp.security.charger_ca")
            if (
                profile in (1, 2)
                and charger.password_hash is None
                and not charger.password_hash_file
                and not self._checked_upstream(cp_id)
            ):
                problems.append(
                    f"chargers.{cp_id}.password_hash: security profile {profile} needs a password "
                    "hash (`oicp-bridge hash-password`), password_hash_file or "
                    f"BRIDGE_CHARGERS__{cp_id}__PASSWORD_HASH"
                )
        return problems

    def _proxy_consistent(self) -> list[str]:
        ocpp, upstream = self.ocpp, self.ocpp.upstream
        proxied = [cp for cp, c in self.chargers.items() if charger_mode(ocpp, c) == "proxy"]
        if not proxied and ocpp.mode != "proxy":
            return []
        problems: list[str] = []
        if upstream.url is None:
            which = "ocpp.mode is proxy" if ocpp.mode == "proxy" else f"{proxied[0]} is proxied"
            problems.append(f"ocpp.upstream.url: the CSMS URL is needed ({which})")
        if upstream.connect_timeout >= ocpp.security.handshake_timeout:
            problems.append(
                f"ocpp.upstream.connect_timeout: {upstream.connect_timeout:g} s must be below "
                f"ocpp.security.handshake_timeout ({ocpp.security.handshake_timeout:g} s), "
                "within which the charger's handshake must be answered"
            )
        if upstream.credentials == "per_charger":
            for cp_id in proxied:
                charger = self.chargers[cp_id]
                if charger.upstream_password is None and charger.upstream_password_file is None:
                    problems.append(
                        f"chargers.{cp_id}.upstream_password: ocpp.upstream.credentials is "
                        "per_charger, so this proxied charger needs upstream_password, "
                        f"upstream_password_file or BRIDGE_CHARGERS__{cp_id}__UPSTREAM_PASSWORD"
                    )
            if ocpp.allow_unlisted and ocpp.mode == "proxy":
                problems.append(
                    "ocpp.allow_unlisted: unlisted chargers have no upstream_password, so they "
                    "cannot be proxied with ocpp.upstream.credentials per_charger"
                )
        return problems

    def _checked_upstream(self, charge_point_id: str | None) -> bool:
        """Whether the CSMS, not the bridge, checks this charger's password (None: unlisted)."""
        charger = self.chargers.get(charge_point_id) if charge_point_id is not None else None
        return (
            charger_mode(self.ocpp, charger) == "proxy"
            and self.ocpp.upstream.credentials == "pass_through"
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Charge point IDs are case-sensitive; the stock env source lower-cases them.
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls)]
        path = _yaml_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return (*sources, file_secret_settings)


class _EnvSource(EnvSettingsSource):
    """``BRIDGE_*`` variables, keeping charge point IDs as spelled in the variable name.

    ``BRIDGE_CHARGERS__CP-0001__PASSWORD_HASH`` must reach charger ``CP-0001``, not ``cp-0001``.
    """

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        chargers = data.get("chargers")
        if isinstance(chargers, dict):
            prefix = f"{self.env_prefix}chargers{self.env_nested_delimiter}".lower()
            spelled = {}
            for name in os.environ:
                if name.lower().startswith(prefix):
                    cp_id = name[len(prefix) :].split(self.env_nested_delimiter or "__", 1)[0]
                    spelled[cp_id.lower()] = cp_id
            data["chargers"] = {spelled.get(k, k): v for k, v in chargers.items()}
        return data


_yaml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("yaml_path", default=None)


def load_settings(path: Path | str | None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (YAML) and the environment; raise ConfigError on problems."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                "--config",
                f"file {str(path)!r} not found (config/bridge.example.yaml is an example to "
                "start from)",
            )
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("--config", f"{path} must hold a mapping at the top level")
    token = _yaml_path.set(Path(path) if path is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None
    finally:
        _yaml_path.reset(token)


def _raise_all(problems: list[str]) -> None:
    """One ValueError for every problem a model-level check found (one per line); each line
    names its own setting, and ``_config_error`` splits them again."""
    if problems:
        raise ValueError(_PROBLEM_SEPARATOR.join(problems))


_PROBLEM_SEPARATOR = "\n"


def _config_error(exc: ValidationError) -> ConfigError:
    """Every problem pydantic found, each with the setting it is about."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "config"
        text = str(error["msg"]).removeprefix("Value error, ")
        for line in text.split(_PROBLEM_SEPARATOR):  # a model check may report several
            where, msg = field, line
            named = _NAMES_ITS_SETTING.match(line)
            if named is not None:  # model checks name the setting they are about themselves
                where, msg = named.group(1), named.group(2)
            if (where, msg) not in problems:
                problems.append((where, msg))
    (field, msg), *more = problems
    return ConfigError(field, msg, more=more)


# "chargers.CP-1.evses.1: EvseID ..." or "ocpp.allow_unlisted needs ocpp.evse_id_template"
_NAMES_ITS_SETTING = re.compile(
    rf"^((?:{'|'.join(Settings.model_fields)})\.[^\s:]+)(?:: | )(.+)$", re.DOTALL
)
