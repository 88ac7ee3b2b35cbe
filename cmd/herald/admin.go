package main

import (
	"flag"
	"os"

	"herald/admin"
)

// adminFlags adds --admin and --token to fs, for the tools that call a
// node's admin API (drain, reload, status, webhooks).
func adminFlags(fs *flag.FlagSet) *admin.Client {
	c := &admin.Client{}
	fs.StringVar(&c.URL, "admin", admin.DefaultURL, "the node's admin API `URL` (admin.listen)")
	fs.StringVar(&c.Token, "token", os.Getenv(admin.EnvToken), "admin bearer `token` (admin.token; default $"+admin.EnvToken+")")
	return c
}
