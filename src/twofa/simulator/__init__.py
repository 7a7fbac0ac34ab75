"""A faithful Duo Auth API v2 peer for development, demos and tests: it checks signatures,
keeps users, devices, enrolments and transactions, long-polls `auth_status`, and has a control
plane and a phone page that play the person holding the phone.
"""

from twofa.simulator.app import create_simulator_app
from twofa.simulator.state import SimulatorSettings, SimulatorState

__all__ = ["SimulatorSettings", "SimulatorState", "create_simulator_app"]
