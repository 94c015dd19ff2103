// Package overseer owns the CP's typed in-process event bus and the State
// worldview every event folds into through ApplyTo. Publishers never block
// on slow subscribers. It knows nothing of Docker or gRPC.
package overseer
