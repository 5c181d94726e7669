package layer

// StreamKicks reports how many writebacks of write streams were started.
func StreamKicks() int64 { return streamKicks.Load() }
