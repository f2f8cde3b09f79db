from benchmarks.peers.harness import main

main()
