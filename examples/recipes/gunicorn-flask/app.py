"""A Flask app as gunicorn serves it under deployer (docs/recipes/gunicorn-flask.md)."""
import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from %s (worker %s, pid %d)\n" % (
        os.environ.get("DEPLOYER_RELEASE", "dev"), os.environ.get("DEPLOYER_WORKER", "-"), os.getpid())


@app.get("/healthz")
def healthz():
    return "ok\n"
