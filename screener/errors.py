"""The exceptions screener raises, and the exit code each maps to at the CLI.

    ScreenerError                 base; never raised itself
    ├── ConfigError               bad config file, key, value or environment variable   (exit 3)
    ├── InputError                a number, date or CSV row the user gave is unusable    (exit 2)
    ├── StoreError                the database cannot be used                             (exit 4)
    │   ├── StoreLockedError      another process holds the write lock for too long
    │   └── StoreCorruptError     not a screener database, or fails its integrity check
    ├── AMIError                  talking to Asterisk failed                              (exit 5)
    │   ├── AMIConnectionError    cannot connect (or the connection was lost)
    │   ├── AMIAuthError          Asterisk refused the login                              (exit 6)
    │   ├── AMINotConnected       an action was attempted while disconnected
    │   ├── AMITimeout            an action got no response in time
    │   └── AMIActionError        Asterisk answered an action with an error
    ├── NotifyError               a notification channel could not deliver               (exit 7)
    └── SharedError               the shared list's PostgreSQL cannot be used            (exit 8)

Third-party exceptions are wrapped where they enter (``raise StoreError(...) from exc``) so that
the cause is kept for the log while the user sees one clear line.
"""

from __future__ import annotations

# Exit codes, documented in the README. 1 is left to click/python for "unexpected".
EXIT_OK = 0
EXIT_INPUT = 2
EXIT_CONFIG = 3
EXIT_STORE = 4
EXIT_AMI = 5
EXIT_AMI_AUTH = 6
EXIT_NOTIFY = 7
EXIT_SHARED = 8


class ScreenerError(Exception):
    """Base of every error screener raises on purpose."""

    exit_code = 1


class ConfigError(ScreenerError):
    """The configuration (file, environment or flag) is invalid."""

    exit_code = EXIT_CONFIG


class InputError(ScreenerError):
    """Something the user handed us (a number, a date, a CSV row) cannot be used."""

    exit_code = EXIT_INPUT


class StoreError(ScreenerError):
    """The database cannot be opened, read or written."""

    exit_code = EXIT_STORE


class StoreLockedError(StoreError):
    """The database stayed locked by another writer for longer than the busy timeout."""


class StoreCorruptError(StoreError):
    """The file is not a screener database, or it fails SQLite's integrity check."""


class AMIError(ScreenerError):
    """Talking to the Asterisk Manager Interface failed."""

    exit_code = EXIT_AMI


class AMIConnectionError(AMIError):
    """The AMI connection could not be made, or was lost."""


class AMIAuthError(AMIError):
    """Asterisk refused the AMI login (wrong user, secret or permitted address)."""

    exit_code = EXIT_AMI_AUTH


class AMINotConnected(AMIError):
    """An action was attempted while the AMI connection was down."""


class AMITimeout(AMIError):
    """An AMI action got no response within its deadline."""


class AMIActionError(AMIError):
    """Asterisk answered an AMI action with ``Response: Error``."""


class NotifyError(ScreenerError):
    """A notification channel (mail server, webhook, MQTT broker) could not deliver."""

    exit_code = EXIT_NOTIFY


class SharedError(ScreenerError):
    """The central PostgreSQL of the shared list cannot be reached, or its schema is wrong."""

    exit_code = EXIT_SHARED
