from atlasprep._console import main

main()
