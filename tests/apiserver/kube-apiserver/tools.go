//go:build tools

// Package tools pins the one command this module exists to build, so that
// `go mod tidy` keeps its whole dependency graph in go.mod and go.sum.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
