module modelplane.io/local-cluster/pause

go 1.22
