"""A FastAPI app as uvicorn serves it under deployer (docs/recipes/uvicorn-fastapi.md)."""
import os

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

app = FastAPI()
app.state.draining = False


@app.middleware("http")
async def close_when_draining(request: Request, call_next):
    # Once serve.py got the stop signal, every answer asks its client to
    # close the connection, so the client's next request opens a new one,
    # which the new release accepts.
    response = await call_next(request)
    if app.state.draining:
        response.headers["Connection"] = "close"
    return response


@app.get("/", response_class=PlainTextResponse)
async def index():
    return "hello from %s (pid %d)\n" % (os.environ.get("DEPLOYER_RELEASE", "dev"), os.getpid())


@app.get("/healthz", response_class=PlainTextResponse)
async def healthz():
    return "ok\n"
