module example.com/hello

go 1.26.8

require github.com/deployer/deployer v0.0.0

replace github.com/deployer/deployer => ../..
