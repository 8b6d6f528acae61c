//go:build tools

// Package tools pins the commands this module exists to build, so that `go mod tidy`
// keeps their whole dependency graph in go.mod and go.sum: kube-apiserver for the
// real-API tier, and the rest of a one-node cluster for tests/cluster.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
