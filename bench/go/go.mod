module github.com/qm-project/qm/bench/go

go 1.21

require github.com/qm-project/qm/bindings/go v0.0.0

replace github.com/qm-project/qm/bindings/go => ../../bindings/go
