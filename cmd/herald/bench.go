package main

import "errors"

// benchCmd runs `herald bench`; the bench package does the work.
func benchCmd(args []string) error { return errors.New("bench: not built yet") }
