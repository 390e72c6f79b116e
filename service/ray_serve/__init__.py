"""A Ray Serve replica process: the service's FastAPI app and its computation in one process (it imports
torch, like service/compute/), one replica per compute process of the plain service. replica.py holds what
needs no Ray (tested under uvicorn too); deployment.py is the Ray Serve deployment; options.py maps the
service's settings to Serve's options."""
