"""Operator facts that OICP's EVSE data needs and OCPI has no field for.

Hotline phone, accessibility, payment options, authentication modes and calibration law come
from the operator's configuration (``catalog.operator_defaults``) and may be overridden per
location. The enums are OICP 2.3's exact spellings (EvseDataRecord), checked on every write so
that EVSE data built from them later is accepted by the hub.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


# OICP 2.3 EvseDataRecord enums (exact spellings of the OpenAPI).
class Accessibility(StrEnum):
    FREE_PUBLICLY_ACCESSIBLE = "Free publicly accessible"
    RESTRICTED_ACCESS = "Restricted access"
    PAYING_PUBLICLY_ACCESSIBLE = "Paying publicly accessible"
    TEST_STATION = "Test Station"


class PaymentOption(StrEnum):
    NO_PAYMENT = "No Payment"
    DIRECT = "Direct"
    CONTRACT = "Contract"


class AuthenticationMode(StrEnum):
    NFC_RFID_CLASSIC = "NFC RFID Classic"
    NFC_RFID_DESFIRE = "NFC RFID DESFire"
    PNC = "PnC"
    REMOTE = "REMOTE"
    DIRECT_PAYMENT = "Direct Payment"
    NO_AUTHENTICATION_REQUIRED = "No Authentication Required"


class CalibrationLaw(StrEnum):
    LOCAL = "Local"
    EXTERNAL = "External"
    NOT_AVAILABLE = "Not Available"


class ValueAddedService(StrEnum):
    RESERVATION = "Reservation"
    DYNAMIC_PRICING = "DynamicPricing"
    PARKING_SENSORS = "ParkingSensors"
    MAXIMUM_POWER_CHARGING = "MaximumPowerCharging"
    PREDICTIVE_CHARGE_POINT_USAGE = "PredictiveChargePointUsage"
    CHARGING_PLANS = "ChargingPlans"
    ROOF_PROVIDED = "RoofProvided"
    NONE = "None"


class DynamicInfo(StrEnum):
    """OICP DynamicInfoAvailable: a string, not a JSON boolean."""

    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"


HotlinePhone = Annotated[str, StringConstraints(pattern=r"^\+[0-9]{5,15}$")]


def _payment_rule(value: list[PaymentOption] | None) -> list[PaymentOption] | None:
    if value is not None:
        if len(set(value)) != len(value):
            raise ValueError("each payment option at most once")
        if PaymentOption.NO_PAYMENT in value and len(value) > 1:
            raise ValueError("'No Payment' cannot be combined with other payment options (OICP)")
    return value


def unique_values(value: list[Any] | None) -> list[Any] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("each value at most once")
    return value


class OperatorFacts(BaseModel):
    """What the hub's EVSE data needs and OCPI does not carry. In the configuration
    (``catalog.operator_defaults``) these are the defaults; on a location, each field that is
    set overrides its default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hotline_phone: HotlinePhone | None = Field(
        None, description="OICP HotlinePhoneNumber, e.g. +4930123456 (+ and 5-15 digits)."
    )
    accessibility: Accessibility | None = Field(None, description="OICP Accessibility.")
    payment_options: (
        Annotated[list[PaymentOption], Field(min_length=1), AfterValidator(_payment_rule)] | None
    ) = Field(None, description="OICP PaymentOptions; 'No Payment' stands alone.")
    authentication_modes: (
        Annotated[list[AuthenticationMode], Field(min_length=1), AfterValidator(unique_values)]
        | None
    ) = Field(None, description="OICP AuthenticationModes.")
    calibration_law: CalibrationLaw | None = Field(
        None, description="OICP CalibrationLawDataAvailability."
    )
    value_added_services: (
        Annotated[list[ValueAddedService], Field(min_length=1), AfterValidator(unique_values)]
        | None
    ) = Field(
        None,
        description="OICP ValueAddedServices; unset: Reservation if the EVSE is "
        "RESERVABLE, else None.",
    )
    is_hubject_compatible: bool | None = Field(
        None,
        description="OICP IsHubjectCompatible (false: not started/stopped remotely "
        "via the hub); unset: true.",
    )
    dynamic_info_available: DynamicInfo | None = Field(
        None, description="OICP DynamicInfoAvailable: auto, true or false (strings); unset: auto."
    )

    def over(self, defaults: OperatorFacts) -> OperatorFacts:
        """These facts with the unset ones taken from ``defaults``."""
        mine = self.model_dump(exclude_none=True)
        return defaults.model_copy(update=mine)
