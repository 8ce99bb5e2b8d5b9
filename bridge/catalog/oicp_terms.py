"""How catalog (OCPI) connector terms read in OICP, and which current each plug carries.

A connector's OCPI standard (and, for Type 2, its format) gives its OICP ``Plugs`` value; a
standard missing here has no OICP plug (GB/T, ChaoJi, most domestic plugs,
pantographs). OICP 2.3 knows the power types AC_1_PHASE, AC_3_PHASE and DC only.
"""

from __future__ import annotations

from typing import Literal

from bridge.catalog.enums import ConnectorFormat, ConnectorStandard, PowerType

S = ConnectorStandard
Current = Literal["AC", "DC"]

_PLUGS: dict[ConnectorStandard, str] = {
    S.IEC_62196_T1: "Type 1 Connector (Cable Attached)",
    S.IEC_62196_T1_COMBO: "CCS Combo 1 Plug (Cable Attached)",
    S.IEC_62196_T2_COMBO: "CCS Combo 2 Plug (Cable Attached)",
    S.IEC_62196_T3A: "Type 3 Outlet",
    S.IEC_62196_T3C: "Type 3 Outlet",
    S.CHADEMO: "CHAdeMO",
    S.DOMESTIC_E: "Type E French Standard",
    S.DOMESTIC_F: "Type F Schuko",
    S.DOMESTIC_G: "Type G British Standard",
    S.DOMESTIC_J: "Type J Swiss Standard",
    S.IEC_60309_2_SINGLE_16: "IEC 60309 Single Phase",
    S.IEC_60309_2_THREE_16: "IEC 60309 Three Phase",
    S.IEC_60309_2_THREE_32: "IEC 60309 Three Phase",
    S.IEC_60309_2_THREE_64: "IEC 60309 Three Phase",
    S.NEMA_5_20: "NEMA 5-20",
    S.TESLA_R: "Tesla Connector",
    S.TESLA_S: "Tesla Connector",
}

#: The power types OICP's ChargingFacilities take.
OICP_POWER_TYPES = frozenset({PowerType.AC_1_PHASE, PowerType.AC_3_PHASE, PowerType.DC})

_DC_STANDARDS = frozenset({
    S.CHADEMO, S.CHAOJI, S.GBT_DC, S.IEC_62196_T1_COMBO, S.IEC_62196_T2_COMBO,
    S.PANTOGRAPH_BOTTOM_UP, S.PANTOGRAPH_TOP_DOWN,
})  # fmt: skip
_BOTH_STANDARDS = frozenset({S.TESLA_R, S.TESLA_S})

#: OICP plug name → the only current it carries (plugs carrying both are absent).
PLUG_CURRENT: dict[str, Current] = {
    "Type 1 Connector (Cable Attached)": "AC",
    "Type 2 Outlet": "AC",
    "Type 2 Connector (Cable Attached)": "AC",
    "Type 3 Outlet": "AC",
    "Type E French Standard": "AC",
    "Type F Schuko": "AC",
    "Type G British Standard": "AC",
    "Type J Swiss Standard": "AC",
    "IEC 60309 Single Phase": "AC",
    "IEC 60309 Three Phase": "AC",
    "NEMA 5-20": "AC",
    "CCS Combo 1 Plug (Cable Attached)": "DC",
    "CCS Combo 2 Plug (Cable Attached)": "DC",
    "CHAdeMO": "DC",
}


def oicp_plug(standard: ConnectorStandard, form: ConnectorFormat) -> str | None:
    """The OICP ``Plugs`` value of a connector; None when OICP has no such plug."""
    if standard is S.IEC_62196_T2:
        return "Type 2 Outlet" if form is ConnectorFormat.SOCKET else (
            "Type 2 Connector (Cable Attached)")  # fmt: skip
    return _PLUGS.get(standard)


def standard_current(standard: ConnectorStandard) -> Current | None:
    """The only current a plug standard carries; None for plugs that carry both."""
    if standard in _BOTH_STANDARDS:
        return None
    return "DC" if standard in _DC_STANDARDS else "AC"
