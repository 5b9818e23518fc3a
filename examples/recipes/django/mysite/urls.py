import os

from django.db import connection
from django.http import HttpResponse
from django.urls import path


def index(request):
    with connection.cursor() as c:
        c.execute("SELECT COUNT(*) FROM django_migrations")
        migrations = c.fetchone()[0]
    return HttpResponse("hello from %s (%d migrations applied)\n" % (os.environ.get("DEPLOYER_RELEASE", "dev"), migrations),
                        content_type="text/plain")


def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain")


urlpatterns = [path("", index), path("healthz", healthz)]
