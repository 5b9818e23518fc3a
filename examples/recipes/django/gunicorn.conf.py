# No bind: under deployer gunicorn takes the socket from LISTEN_FDS itself.
workers = 2
graceful_timeout = 25   # below the app's drain_timeout (30s)
accesslog = "-"
