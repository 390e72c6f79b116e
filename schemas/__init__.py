"""The wire contract of the service: pydantic models of requests and responses."""
