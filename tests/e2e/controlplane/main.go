// controlplane is a local Kubernetes control plane for the end-to-end tests, built from
// upstream code only: this file wires upstream packages and adds no behaviour of its own.
//
//	controlplane up --dir DIR --etcd-port N --peer-port N -- APISERVER_FLAGS -- CM_FLAGS -- SCHED_FLAGS
//	    embedded etcd, then kube-apiserver, kube-controller-manager and kube-scheduler, each
//	    this binary again in a child process, stopped together
//	controlplane kubectl ARGS...      the matching kubectl (kustomize included); a link
//	                                  named kubectl to this binary is kubectl too
//	controlplane kube-apiserver ARGS  (and kube-controller-manager, kube-scheduler) one component
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		os.Exit(run(kubectl.NewDefaultKubectlCommand(), os.Args[1:]))
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: controlplane up|kubectl|kube-apiserver|kube-controller-manager|kube-scheduler ARGS...")
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	switch name {
	case "up":
		os.Exit(up(args))
	case "kubectl":
		os.Exit(run(kubectl.NewDefaultKubectlCommand(), args))
	case "kube-apiserver":
		os.Exit(run(apiserver.NewAPIServerCommand(), args))
	case "kube-controller-manager":
		os.Exit(run(controllermanager.NewControllerManagerCommand(), args))
	case "kube-scheduler":
		os.Exit(run(scheduler.NewSchedulerCommand(), args))
	default:
		fmt.Fprintf(os.Stderr, "controlplane: unknown command %q\n", name)
		os.Exit(2)
	}
}

// run is what each upstream main does.
func run(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

// up runs embedded etcd, then the three components, until a signal or until one of them
// stops.
func up(args []string) int {
	if len(args) < 6 || args[0] != "--dir" || args[2] != "--etcd-port" || args[4] != "--peer-port" {
		fmt.Fprintln(os.Stderr, "usage: controlplane up --dir DIR --etcd-port N --peer-port N -- APISERVER -- CM -- SCHED")
		return 2
	}
	dir, etcdPort, peerPort := args[1], args[3], args[5]
	groups := split(args[6:])
	if len(groups) != 3 {
		fmt.Fprintln(os.Stderr, "controlplane up: want three flag groups after --, got", len(groups))
		return 2
	}

	cfg := embed.NewConfig()
	cfg.Name = "e2e"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + etcdPort}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + peerPort}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 1
	}
	defer etcd.Close()
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60 s")
		return 1
	}

	// Each component is this binary again, in a child process: upstream's commands assume
	// one per process (their signal handler, logging setup and feature gates are global).
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	done := make(chan string, 3)
	type child struct {
		cmd    *exec.Cmd
		exited chan struct{}
	}
	var children []child
	for i, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		cmd := exec.Command(self, append([]string{name}, groups[i]...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			return 1
		}
		c := child{cmd, make(chan struct{})}
		children = append(children, c)
		go func(name string) {
			err := c.cmd.Wait()
			close(c.exited)
			done <- fmt.Sprintf("%s stopped: %v", name, err)
		}(name)
	}
	status := 0
	select {
	case <-ctx.Done():
	case why := <-done:
		fmt.Fprintln(os.Stderr, why)
		status = 1
	case err := <-etcd.Err():
		fmt.Fprintln(os.Stderr, "etcd:", err)
		status = 1
	}
	// Scheduler and controller manager first, the apiserver last, then etcd (deferred).
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	return status
}

// split cuts `-- a b -- c -- d` into [[a b] [c] [d]].
func split(args []string) [][]string {
	var groups [][]string
	for _, a := range args {
		if a == "--" {
			groups = append(groups, []string{})
			continue
		}
		if len(groups) == 0 {
			groups = append(groups, []string{})
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], a)
	}
	return groups
}
