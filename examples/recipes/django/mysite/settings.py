"""Settings for running under deployer (docs/recipes/django.md)."""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent  # the release directory

# From the app's env: in the config, or better a file only the app's user reads.
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
# The health probe asks for 127.0.0.1; add your domain names.
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

# var/ is a shared path: it outlives releases, so the database does too.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "var" / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
