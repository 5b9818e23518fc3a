# Makes puma drain on TERM (docs/recipes/puma-sinatra.md).
#
# puma's own TERM handling stops accepting, finishes the requests in
# flight, and closes idle keep-alive connections at once: a client that
# sent its next request on one at that moment gets no answer. With this,
# TERM first answers every request with "Connection: close" for
# DRAIN_SECONDS, so each client closes its connection after its answer
# and opens the next one to the new release, and only then lets puma stop.
# A second TERM stops at once.
class Drain
  SECONDS = Float(ENV.fetch("DRAIN_SECONDS", "1"))

  @draining = false
  class << self
    attr_reader :draining

    # Chains in front of the TERM handler puma installed (puma sets its
    # traps before it loads config.ru).
    def install
      puma_stop = Signal.trap("TERM") do
        if @draining
          stop(puma_stop)
        else
          @draining = true
          Thread.new { sleep SECONDS; stop(puma_stop) }
        end
      end
    end

    def stop(handler)
      if handler.respond_to?(:call)
        handler.call
      else
        Signal.trap("TERM", handler)
        Process.kill("TERM", Process.pid)
      end
    end
  end

  def initialize(app)
    @app = app
  end

  def call(env)
    # puma decides keep-alive from the request's Connection header.
    env["HTTP_CONNECTION"] = "close" if Drain.draining
    @app.call(env)
  end
end
