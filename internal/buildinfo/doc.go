// Package buildinfo says which deployer this is: the version set at build
// time with -ldflags "-X github.com/deployer/deployer/internal/buildinfo.Version=...",
// else the module version, and the VCS commit the binary was built from.
package buildinfo
