//go:build tools

// The real node's kubelet (tests/e2e/node-up) is upstream's, built from this module:
// `go build k8s.io/kubernetes/cmd/kubelet`. This file only pins it in go.mod.
package tools

import _ "k8s.io/kubernetes/cmd/kubelet"
