"""The attention service: FastAPI app, attention module, input and weight resolution, encoding."""
