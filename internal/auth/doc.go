// Package auth owns clawker's identity vocabulary and PKI: typed agent and
// project names, the AgentFullName composition, the URN SANs of agent leaf
// certs, thumbprints, and minting/parsing of certs and keys. It performs no
// I/O beyond reading and writing the PEM files it is pointed at, and knows
// nothing of Docker, gRPC or the registry.
package auth
