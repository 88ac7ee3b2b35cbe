package main

import (
	"flag"
	"fmt"
	"io"

	"herald/configs"
)

// keygenCmd prints a fresh random key: 32 bytes, base64, as
// cluster.secret_key wants it (it also serves as a cluster.route_auth
// password). Nothing else is printed, so it can be captured:
// HERALD_CLUSTER_SECRET_KEY=$(herald keygen).
func keygenCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("keygen: takes no arguments")
	}
	k, err := configs.NewSecretKey()
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	_, err = fmt.Fprintln(out, k)
	return err
}
