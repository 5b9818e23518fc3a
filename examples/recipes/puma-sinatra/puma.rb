# puma's settings under deployer (puma -C puma.rb).
# Take the socket the daemon passes (LISTEN_FDS) and bind nothing else.
bind_to_activated_sockets "only"
environment ENV.fetch("RACK_ENV", "production")
threads 4, 4
# Finish what is in flight on TERM for up to this long (below drain_timeout).
force_shutdown_after 25
