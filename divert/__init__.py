"""The operator's tool: portal operations, the sync worker's launcher, explain."""
