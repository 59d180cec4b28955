"""`gradsvc serve`: gradsvc over HTTP (an ASGI app, FastAPI on uvicorn). See `app`."""
