# A Sinatra app as puma serves it under deployer (docs/recipes/puma-sinatra.md).
require "sinatra/base"
require_relative "drain"

class App < Sinatra::Base
  get "/" do
    content_type "text/plain"
    "hello from #{ENV.fetch('DEPLOYER_RELEASE', 'dev')} (pid #{Process.pid})\n"
  end

  get "/healthz" do
    content_type "text/plain"
    "ok\n"
  end
end

Drain.install
use Drain
run App
