// Command cardbind-bench measures the cardbind verifier end to end, each
// figure beside a baseline taken in the same run:
//
//   - verified reports per second: simulated gateways, enrolled through the
//     admin API, each with its own Ed25519 key and MQTT connection, publish
//     signed QoS 1 reports to the real cardbind-verifier (a child process)
//     with a bounded window of unacknowledged publishes; a report counts
//     once the verifier has processed it (cardbind_reports_total). The
//     baseline is a bare nats-server with JetStream and MQTT (another child
//     process) fed the same payloads by the same clients, each message
//     consumed off the MQTT stream by a plain JetStream consumer that acks
//     it.
//   - SIM swap latency under background load: a card bound to one gateway
//     is reported by another; the time from the publish to the block at the
//     simulated operator network, to the alert at a tenant's MQTT
//     subscriber, and to the decision in the card's history.
//
// It prints a summary, and can write the figures as a Markdown section
// (-md), as JSON (-json) and as PNG plots (-plots).
//
//	go run ./verifier/cmd/cardbind-bench -md /tmp/verifier.md -plots docs/bench
//	cardbind-bench splice -doc docs/benchmarks.md -section verifier -from /tmp/verifier.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cardbind-bench:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "bare-broker":
			return bareBroker(ctx, args[1:], stderr)
		case "profiled-verifier":
			return profiledVerifier(ctx, args[1:], stdout, stderr)
		case "splice":
			return spliceCmd(args[1:], stderr)
		case "run":
			args = args[1:]
		}
	}
	return bench(ctx, args, stdout, stderr)
}
