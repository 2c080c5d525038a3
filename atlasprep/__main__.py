from atlasprep.cli import main

main()
