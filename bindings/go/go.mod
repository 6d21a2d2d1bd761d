module github.com/qm-project/qm/bindings/go

go 1.21
