"""``python -m atldas`` runs the command-line tool."""


from atldas.cli import main_exit

main_exit()
