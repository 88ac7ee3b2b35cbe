package gateway

// UserCount returns the number of distinct users in a presence channel on
// this node.
func (g *Gateway) UserCount(app *App, channel string) int { return 0 }

// Users returns the distinct user ids in a presence channel on this node.
func (g *Gateway) Users(app *App, channel string) []string { return nil }

// TerminateUser closes every connection of the app signed in as userID with
// 4009, and returns how many there were.
func (g *Gateway) TerminateUser(app *App, userID string) int { return 0 }
