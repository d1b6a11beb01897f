module workpool/benchmarks/go

go 1.19
