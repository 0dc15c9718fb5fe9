"""lockrun: run each scheduled fire of a crontab line on exactly one server."""

__version__ = "0.1.0"
