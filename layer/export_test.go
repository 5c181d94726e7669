package layer

// StreamKicks reports how many writebacks of write streams were started.
func StreamKicks() int64 { return streamKicks.Load() }

// UnreachablePath is the bridge's path for a node without a name.
var UnreachablePath = unreachable
