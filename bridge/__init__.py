"""ocpp-oicp-bridge: OCPP 1.6J / 2.0.1 statuses to Hubject OICP eRoamingPushEvseStatus."""

__version__ = "0.1.0"

#: The console command (``python -m bridge`` runs the same).
COMMAND = "oicp-bridge"
