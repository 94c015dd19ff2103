// Command clawker-cp is the clawker control plane daemon. See
// controlplane/daemon for what it runs; this file only parses the
// configuration and turns SIGTERM/SIGINT into a graceful shutdown.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clawker/clawker/controlplane/daemon"
	"github.com/clawker/clawker/internal/logger"
	"github.com/clawker/clawker/internal/version"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == holdArg {
		hold()
		return
	}
	cfg, err := daemon.LoadConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, daemon.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "clawker-cp: %v\n", err)
		os.Exit(2)
	}
	log := logger.Stderr(cfg.LogLevel, "clawker-cp")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := daemon.New(cfg, version.Version, log).Run(ctx); err != nil {
		log.Error().Str("event", "cp_exit").Err(err).Msg("clawker-cp failed to start")
		stop()
		os.Exit(1)
	}
}

// holdArg runs the process that owns the CP's network namespace (the
// clawker-controlplane-net container): it only waits to be stopped, so the
// CP container can be replaced without rejoining every agent network.
const holdArg = "hold"

func hold() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
}
