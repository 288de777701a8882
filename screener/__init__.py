"""screener: a call-screening agent for Asterisk PBXs."""

__version__ = "0.1.0"
