module addrinuse/runtimes/go

go 1.19
